//! Image references: Docker's grammar, `[host[:port]/]path[:tag][@sha256:hex]`.

use super::SpecError;

/// `[host[:port]/]path[:tag][@sha256:hex]`, Docker's reference grammar.
pub fn image_reference(r: &str) -> Result<(), SpecError> {
    let bad = |why: &str| {
        SpecError::invalid(
            "image",
            format!("`{r}` is not an image reference ({why}); write it like `registry:5000/team/name:tag`"),
        )
    };
    crate::util::image::ImageRef::parse(r)
        .map(|_| ())
        .map_err(bad)
}
