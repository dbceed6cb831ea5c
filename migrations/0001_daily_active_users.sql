-- One row per (project, day, user) that had at least one event that day: DAU is a count of rows,
-- WAU/MAU a count of distinct users over a window, and re-applying an event is a no-op, so this
-- rollup is exact under redelivery without a ledger.
create table daily_active_users (
    project text not null,
    day date not null,
    user_key text not null,
    primary key (project, day, user_key)
);

-- WAU/MAU and retention look users up across days.
create index daily_active_users_user on daily_active_users (project, user_key, day);
