//! Image references: Docker's grammar, `[host[:port]/]path[:tag][@sha256:hex]`, checked for
//! the `image` field (the reading itself is `util::image::ImageRef`).

use super::SpecError;
use crate::util::image::ImageRef;

/// `r` taken apart, or an `image` error saying what is wrong with it.
pub fn image_reference(r: &str) -> Result<ImageRef<'_>, SpecError> {
    ImageRef::parse(r).map_err(|why| {
        SpecError::invalid(
            "image",
            format!("`{r}` is not an image reference ({why}); write it like `registry:5000/team/name:tag`"),
        )
    })
}
