//! Masking personal data: shared with the other services in `callback_kit::privacy`.

pub use callback_kit::privacy::mask_phone;
