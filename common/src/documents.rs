//! The MongoDB side of the contract (docs/contract.md §4, §6): collection names, the `_id` of each
//! document and the stored events' field names. The workers are the only writers of both
//! collections; everything else (reconcile, replays, the benchmarks, other platform services)
//! reads them through these names.

/// Raw events, one document per (project, messageId).
pub const EVENTS: &str = "events";
/// One document per (project, student, course), as the seeds shape it.
pub const LEARNING_PATHS: &str = "student_learning_paths";

/// The `_id` of a stored event. Projects cannot contain `:` (see `stream::is_valid_project`), so
/// `project:messageId` is unambiguous whatever the messageId holds; a resend or a redelivery of
/// the same event has the same `_id` and inserts nothing.
pub fn event_id(project: &str, message_id: &str) -> String {
    let mut id = String::with_capacity(project.len() + 1 + message_id.len());
    id.push_str(project);
    id.push(':');
    id.push_str(message_id);
    id
}

/// The `_id` of a learning path: each part percent-encoded where it holds `%` or `:`, then joined
/// with `:`, so no user or course id can make the id of another learner's document (the ids
/// `a:b`+`c` and `a`+`b:c` are `p:a%3Ab:c` and `p:a:b%3Ac`).
pub fn learning_path_id(project: &str, user: &str, course: &str) -> String {
    let mut id = String::with_capacity(project.len() + user.len() + course.len() + 2);
    for (n, part) in [project, user, course].into_iter().enumerate() {
        if n > 0 {
            id.push(':');
        }
        for c in part.chars() {
            match c {
                '%' => id.push_str("%25"),
                ':' => id.push_str("%3A"),
                c => id.push(c),
            }
        }
    }
    id
}

/// Field names of a stored event document (the seeds' names where they have one).
pub mod field {
    pub const ID: &str = "_id";
    pub const PROJECT: &str = "project";
    pub const MESSAGE_ID: &str = "message_id";
    pub const MESSAGE_ID_ASSIGNED: &str = "message_id_assigned";
    pub const TYPE: &str = "type";
    pub const EVENT: &str = "event";
    pub const USER_ID: &str = "user_id";
    pub const ANONYMOUS_ID: &str = "anonymous_id";
    pub const SESSION_ID: &str = "session_id";
    pub const GROUP_ID: &str = "group_id";
    pub const PREVIOUS_ID: &str = "previous_id";
    pub const TS: &str = "ts";
    pub const DAY: &str = "day";
    pub const TIMESTAMP: &str = "timestamp";
    pub const SENT_AT: &str = "sent_at";
    pub const RECEIVED_AT: &str = "received_at";
    pub const HISTORICAL: &str = "historical";
    pub const PROPERTIES: &str = "properties";
    pub const CONTEXT: &str = "context";
    pub const TRAITS: &str = "traits";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_path_ids_cannot_collide_through_separators() {
        assert_eq!(learning_path_id("p", "u1", "c1"), "p:u1:c1");
        assert_ne!(learning_path_id("p", "a:b", "c"), learning_path_id("p", "a", "b:c"));
        assert_ne!(learning_path_id("p", "a%3Ab", "c"), learning_path_id("p", "a:b", "c"));
        assert_eq!(learning_path_id("p", "a:b%", "c"), "p:a%3Ab%25:c");
    }

    #[test]
    fn event_ids_join_project_and_message_id() {
        assert_eq!(event_id("acme", "m:1"), "acme:m:1");
    }
}
