//! `deckhand run --profile NAME … IMAGE [CMD…]`: the image and command given beside a
//! profile. For a profile whose image comes from the constants, IMAGE stands for
//! `DOCKER_SRV/DOCKER_REPO:DOCKER_TAG` (the tag `latest` when it has none, a digest kept) and
//! CMD for `DOCKER_CMD` (as argv, not split again); a profile that fixes its image (an
//! operator profile with one of those constants) refuses IMAGE naming the profile, and a
//! kernel giving both IMAGE and the constants is told to give it once.

use std::collections::BTreeMap;

use super::Profile;
use crate::spec::SpecError;

/// The constants that make the image.
const IMAGE_CONSTANTS: [&str; 3] = ["DOCKER_SRV", "DOCKER_REPO", "DOCKER_TAG"];

/// The image of a profile kernel that gave `image` beside its profile.
pub fn given_image(
    image: &str,
    profile: &Profile,
    constants: &BTreeMap<String, String>,
) -> Result<String, SpecError> {
    if let Some(fixed) = IMAGE_CONSTANTS
        .iter()
        .find(|k| profile.constants.contains_key(**k))
    {
        return Err(SpecError::invalid(
            "image",
            format!(
                "profile `{}` fixes its image ({fixed} is one of its constants); run it without IMAGE",
                profile.name
            ),
        ));
    }
    if let Some(also) = IMAGE_CONSTANTS.iter().find(|k| constants.contains_key(**k)) {
        return Err(SpecError::invalid(
            "image",
            format!("`{image}` is also given as the constant {also}; give the image once"),
        ));
    }
    let image = image.trim();
    Ok(crate::spec::image_reference(image)?.with_default_tag())
}

/// The command of a profile kernel that gave `command` beside its profile.
pub fn given_command(
    command: &[String],
    constants: &BTreeMap<String, String>,
) -> Result<Vec<String>, SpecError> {
    if constants.contains_key("DOCKER_CMD") {
        return Err(SpecError::invalid(
            "command",
            "also given as the constant DOCKER_CMD; give the command once",
        ));
    }
    Ok(command.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    fn builtin() -> Profile {
        super::super::find("docker-batch", &ClusterConfig::default()).unwrap()
    }

    #[test]
    fn an_image_without_a_tag_gets_latest_and_a_digest_is_kept() {
        let none = BTreeMap::new();
        let digest = format!("team/solver@sha256:{}", "a".repeat(64));
        for (given, image) in [
            ("team/solver", "team/solver:latest"),
            ("team/solver:2.1", "team/solver:2.1"),
            ("localhost:5000/solver", "localhost:5000/solver:latest"),
            (digest.as_str(), digest.as_str()),
        ] {
            assert_eq!(given_image(given, &builtin(), &none).unwrap(), image);
        }
    }

    #[test]
    fn a_profile_that_fixes_its_image_refuses_one_naming_the_profile() {
        let mut p = builtin();
        p.name = "solver".into();
        p.constants
            .insert("DOCKER_REPO".into(), "team/solver".into());
        let e = given_image("other/image", &p, &BTreeMap::new()).unwrap_err();
        assert_eq!(e.field, "image");
        assert!(e.reason.contains("profile `solver` fixes its image"), "{e}");
    }

    #[test]
    fn the_image_and_command_are_given_once() {
        let c: BTreeMap<String, String> = [
            ("DOCKER_TAG".to_string(), "1".to_string()),
            ("DOCKER_CMD".to_string(), "true".to_string()),
        ]
        .into();
        let e = given_image("team/solver", &builtin(), &c).unwrap_err();
        assert!(e.reason.contains("DOCKER_TAG"), "{e}");
        let e = given_command(&["true".into()], &c).unwrap_err();
        assert_eq!(e.field, "command");
        assert!(given_image("Not An Image", &builtin(), &BTreeMap::new()).is_err());
    }
}
