//! What `pause_reading()`/`resume_reading()` decide for the datagram and pipe transports: a
//! transport reads unless its protocol paused it or it is closing, pausing what is not reading
//! and resuming what is not paused (or is closing) do nothing and say so.

#[derive(Default)]
pub(super) struct ReadGate {
    pub paused: bool,
    pub closing: bool,
}

impl ReadGate {
    pub fn is_reading(&self) -> bool {
        !self.paused && !self.closing
    }

    /// `pause_reading()`: false if it was not reading.
    pub fn pause(&mut self) -> bool {
        let was_reading = self.is_reading();
        self.paused |= was_reading;
        was_reading
    }

    /// `resume_reading()`: false if it was not paused, or is closing.
    pub fn resume(&mut self) -> bool {
        let resumes = self.paused && !self.closing;
        self.paused &= !resumes;
        resumes
    }
}
