//! Reading the audit trail (being written).
