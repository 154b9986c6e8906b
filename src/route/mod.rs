//! Route: which destinations a change goes to, and what each is sent. The rule language, the
//! templates, the chat services' message bodies, and the plan that turns a change into rendered
//! deliveries.

pub mod chat;
pub mod digest;
pub mod plan;
pub mod render;
pub mod rules;
