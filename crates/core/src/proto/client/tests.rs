//! The client's checks of who serves, and its messages.

use super::*;

#[test]
fn only_root_and_our_own_uid_are_trusted_to_serve() {
    assert!(trusted(0, 1000));
    assert!(trusted(1000, 1000));
    assert!(trusted(0, 0));
    assert!(!trusted(65534, 0));
    assert!(!trusted(1001, 1000));
}

#[test]
fn permission_denied_names_the_owner_and_who_may_control_the_service() {
    let socket = Path::new("/run/zdctl/api.sock");
    let owned = |uid| Owner {
        path: socket.to_path_buf(),
        uid,
    };
    assert_eq!(
        permission_denied(socket, Some(&owned(0))),
        "permission denied on the control socket '/run/zdctl/api.sock', which belongs to \
         uid 0 (root): only root may control this service; run the command as root"
    );
    let other = permission_denied(socket, Some(&owned(4_000_000)));
    assert_eq!(
        other,
        "permission denied on the control socket '/run/zdctl/api.sock', which belongs to \
         uid 4000000: only root and uid 4000000 may control this service; run the command \
         as one of them"
    );
    let dir = Owner {
        path: PathBuf::from("/run/zdctl"),
        uid: 0,
    };
    assert_eq!(
        permission_denied(socket, Some(&dir)),
        "permission denied on the control socket '/run/zdctl/api.sock': '/run/zdctl' \
         belongs to uid 0 (root) and is closed to you; only root and the user that runs the \
         supervisor may control this service"
    );
}
