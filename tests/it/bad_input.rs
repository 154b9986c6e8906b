//! Issue 7: bad input.
