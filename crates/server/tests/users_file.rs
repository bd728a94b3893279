//! The users file as the FTP service's accounts: hand edits apply while the server runs, a
//! broken file never takes the accounts away, and a new account logs in at once.

mod support;

use logarchive_server::users::{NewUser, Role, UserDb};
use std::time::Duration;
use support::{Server, PASSWORD};

#[tokio::test]
async fn hand_edits_of_the_users_file_are_picked_up_and_broken_files_ignored() {
    let s = Server::start(|_| {}).await;
    let path = s.data.path().join("users.toml");
    // Added by another process (as `logarchive user add` does, through its own UserDb on the
    // same file): logs in at once, without waiting for the poll.
    UserDb::open(&path)
        .unwrap()
        .add(NewUser::with_role("agent01", PASSWORD, Role::Agent))
        .unwrap();
    s.ftp("agent01", PASSWORD)
        .await
        .expect("a new account logs in");
    let good = std::fs::read_to_string(&path).unwrap();
    let users = &s.running.users;

    // Broken by hand: the server keeps the last good accounts.
    std::fs::write(&path, format!("{good}\n[users.broken\n")).unwrap();
    let before = users.snapshot();
    assert!(
        users.reload_if_changed().is_err(),
        "the broken file is refused"
    );
    assert_eq!(*users.snapshot(), *before);
    s.ftp("agent01", PASSWORD)
        .await
        .expect("the last good accounts stay in force");

    // A hand edit that disables the account takes effect within the poll (1 s), without a login
    // to trigger it.
    std::fs::write(&path, good.replace("enabled = true", "enabled = false")).unwrap();
    s.eventually("the edited users file to be reloaded", || {
        users.get("agent01").filter(|r| !r.enabled)
    })
    .await;
    assert!(s.ftp("agent01", PASSWORD).await.is_err());
    // ...and back: the next login sees it at once.
    std::fs::write(&path, &good).unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.ftp("agent01", PASSWORD))
        .await
        .expect("in time")
        .expect("enabled again");
}
