//! The integration gateway: HL7 v2 over MLLP, FHIR R4 REST, dealer DMS / CRM and telephony
//! webhooks in; notifications out.
//!
//! - Pure: [`mapping`] (mapping as data), [`hl7`] (parse, default mappings, ACKs), [`mllp`]
//!   (framing), [`fhir`], [`webhooks`] (signatures, DMS schema, CDRs), [`settings`].

pub mod fhir;
pub mod hl7;
pub mod mapping;
pub mod mllp;
pub mod settings;
pub mod webhooks;
