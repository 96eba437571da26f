//! bonde-pressure twilio adapter (placeholder until its issue lands).
