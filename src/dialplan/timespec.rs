//! Time specs for `include => ctx,times,weekdays,mdays,months[,tz]`, GotoIfTime, IFTIME.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSpec {
    _priv: (),
}

impl TimeSpec {
    /// Parse `times,weekdays,mdays,months[,tz]` (`|` also accepted as separator).
    pub fn parse(spec: &str) -> Result<TimeSpec, String> {
        let _ = spec;
        todo!("timespec")
    }
    /// Does the given local time match?
    pub fn matches(&self, now: chrono::DateTime<chrono::Local>) -> bool {
        let _ = now;
        todo!("timespec")
    }
    pub fn matches_at(&self, utc: chrono::DateTime<chrono::Utc>) -> bool {
        let _ = utc;
        todo!("timespec")
    }
}
