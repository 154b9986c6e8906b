//! Issue 7: property tests.
