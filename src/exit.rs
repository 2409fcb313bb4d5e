//! Every exit status the program gives, in one place (the README's "Running" and `run`
//! sections document them).

/// Something failed at run time: the server could not start, or stopped with calls unanswered;
/// `doctor` found a problem.
pub const EXIT_FAILURE: u8 = 1;
/// Invalid flags or settings: the program refuses to start.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// `run`: the job could not be counted, so the command was not started (EX_TEMPFAIL).
pub const EXIT_NOT_COUNTED: u8 = 75;
/// `run`: the command exists but could not be started (as a shell's).
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// `run`: the command was not found (as a shell's).
pub const EXIT_NOT_FOUND: u8 = 127;
