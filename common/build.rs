// `sqlx::migrate!` embeds migrations/ at compile time; without this, a new migration file does
// not rebuild the crates that run it (sqlx's documented build script).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
