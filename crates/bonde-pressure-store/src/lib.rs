//! bonde-pressure store adapter (placeholder until its issue lands).
