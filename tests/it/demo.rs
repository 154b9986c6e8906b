//! Issue 6: the `demo` command, run as a child process.
