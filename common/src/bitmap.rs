//! Sets of users as compressed bitmaps of their dense per-project ordinals (`user_ordinals`), the
//! form in which the workers keep every distinct count (daily active users, course learners and
//! viewers, first-day cohorts) and the api reads them: a union is a rolling window (WAU, MAU), an
//! intersection a retention cell, and both are exact. Stored in PostgreSQL `activity_bitmaps` in
//! the roaring portable format (<https://github.com/RoaringBitmap/RoaringFormatSpec>), so any
//! roaring implementation can read them.

pub use roaring::RoaringBitmap;

/// What a row of `activity_bitmaps` holds (its `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i16)]
pub enum Kind {
    /// Users with at least one event on the day (`course_id` is empty).
    Active = 0,
    /// Learners with an event of the course on the day.
    CourseActive = 1,
    /// Users who viewed the course on the day.
    CourseViewers = 2,
    /// Users whose first active day is the day (`course_id` is empty): retention cohorts.
    Cohort = 3,
}

impl Kind {
    /// The `kind` column's value.
    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<Self> {
        [Kind::Active, Kind::CourseActive, Kind::CourseViewers, Kind::Cohort]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// The stored form of a bitmap.
pub fn encode(bitmap: &RoaringBitmap) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    // Writing into a Vec cannot fail.
    bitmap.serialize_into(&mut bytes).ok();
    bytes
}

/// A stored bitmap; an error names a corrupt row (never expected: only the workers write them).
pub fn decode(bytes: &[u8]) -> std::io::Result<RoaringBitmap> {
    RoaringBitmap::deserialize_from(bytes)
}

/// An ordinal as a bitmap member. Ordinals are assigned from 0 upwards and never negative.
pub fn member(ord: i32) -> u32 {
    u32::try_from(ord).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_survive_their_stored_form() {
        let users: RoaringBitmap = [0u32, 1, 7, 65_536, 1_000_000].into_iter().collect();
        assert_eq!(decode(&encode(&users)).unwrap(), users);
        assert_eq!(decode(&encode(&RoaringBitmap::new())).unwrap().len(), 0);
        assert!(decode(b"not a bitmap").is_err());
    }

    #[test]
    fn every_kind_has_a_distinct_code() {
        for kind in [Kind::Active, Kind::CourseActive, Kind::CourseViewers, Kind::Cohort] {
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(Kind::from_code(9), None);
    }
}
