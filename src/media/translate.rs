//! TEMPORARY stub, replaced by the media branch.
use super::{Format, Frame};
pub struct Translator {
    from: Format,
    to: Format,
}
impl Translator {
    pub fn new(from: Format, to: Format) -> Result<Translator, String> {
        Ok(Translator { from, to })
    }
    pub fn from(&self) -> Format {
        self.from
    }
    pub fn to(&self) -> Format {
        self.to
    }
    pub fn convert(&mut self, f: &Frame) -> Frame {
        f.clone()
    }
}
