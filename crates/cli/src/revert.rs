//! `zdctl revert NAME`: ends a restart's bake window early. The supervisor drains the new
//! generation and keeps the old one, which stood by serving meanwhile; the restart itself
//! ends rolled back. Returns once the old generation is the only one left.

use zd_core::proto::ReplyResult;
use zd_core::service::ServiceError;

use crate::cli::RevertArgs;
use crate::control;
use crate::exit::ExitError;
use crate::output;
use crate::progress::Progress;

pub async fn revert(args: RevertArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let service = control::open(name)?;
    let progress = Progress::new(args.json, &format!("reverting '{name}'"));
    let result = service.revert(|event| progress.event(event)).await;
    progress.finish();
    let reverted = result.map_err(|err| revert_error(name, err))?;
    if args.json {
        output::json_line(&ReplyResult::Reverted {
            generation: reverted.generation,
            old_generation: reverted.old_generation,
        })
    } else {
        output::line(&format!(
            "reverted '{name}': generation {} drained, generation {} serves alone",
            reverted.generation, reverted.old_generation
        ))
    }
}

/// A refusal means nothing was baking (or the supervisor knows no `revert`): the
/// supervisor's words, and where to look.
fn revert_error(name: &str, err: ServiceError) -> anyhow::Error {
    match err {
        ServiceError::Refused { message, .. } => ExitError::of_kind(
            crate::exit::FAILURE,
            "refused",
            format!(
                "cannot revert '{name}': {message}; 'zdctl status {name}' shows whether a \
                 restart is baking"
            ),
        ),
        other => control::service_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_baking_exits_1_with_the_supervisors_words_and_a_pointer_to_status() {
        let err = revert_error(
            "api",
            ServiceError::Refused {
                name: "api".into(),
                message: "no restart is baking".into(),
            },
        );
        let (code, message) = crate::exit::classify(&Err(err));
        assert_eq!(code, crate::exit::FAILURE);
        assert_eq!(
            message,
            "cannot revert 'api': no restart is baking; 'zdctl status api' shows whether a \
             restart is baking"
        );
    }
}
