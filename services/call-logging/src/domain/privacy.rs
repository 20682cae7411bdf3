//! Masking personal data: shared with the other services in `callback_kit::privacy`.

pub use callback_rules::privacy::mask_phone;
