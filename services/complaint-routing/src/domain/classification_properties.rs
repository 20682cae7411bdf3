//! Properties of classification and routing (`file`), over arbitrary complaints: the rules the
//! seeds give hold whatever the category, text, hints and context.

use proptest::prelude::*;
use uuid::Uuid;

use super::complaint::{file, holder, targets_for, ComplaintEvent, Context, Intake, Level};
use super::rules::tests::property_rules;
use super::rules::{Class, ClassRules, SEVERITY_HINTS};

fn intake() -> impl Strategy<Value = Intake> {
    let category = prop_oneof![
        Just(String::new()),
        Just("leak".to_owned()),
        Just("noise".to_owned()),
        Just("appliance_fault".to_owned()),
        Just("suggestion".to_owned()),
        "[a-z_]{1,12}",
    ];
    let text = prop_oneof![
        "[a-z ]{0,30}",
        "[a-z ]{0,10}".prop_map(|t| format!("{t} 墙上有裂缝")),
    ];
    let hints = proptest::sample::subsequence(SEVERITY_HINTS.to_vec(), 0..=SEVERITY_HINTS.len());
    (category, text, hints).prop_map(|(category, text, hints)| Intake {
        tenant_id: "property".into(),
        source: "hotline".into(),
        source_id: "t-1".into(),
        channel: "hotline".into(),
        text,
        category,
        severity_hints: hints.into_iter().map(str::to_owned).collect(),
        ..Intake::default()
    })
}

fn context() -> impl Strategy<Value = Context> {
    (0u32..10, any::<bool>()).prop_map(|(group_customers, repeat)| Context {
        previous_complaint: repeat.then(|| Uuid::from_u128(9)),
        group_customers,
    })
}

proptest! {
    #[test]
    fn filing_follows_the_seeds_rules(intake in intake(), context in context()) {
        let rules = property_rules();
        let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let events = file(Uuid::from_u128(1), &intake, &rules, 1, &context, now);
        let again = file(Uuid::from_u128(1), &intake, &rules, 1, &context, now);
        prop_assert_eq!(&events, &again, "filing is deterministic");
        let ComplaintEvent::ComplaintFiled(filed) = &events[0] else {
            return Err(TestCaseError::fail("the first event is the filing"));
        };
        let hinted = |h: &str| intake.severity_hints.iter().any(|x| x == h);
        // Legal risk is major (A); public exposure is at least a group complaint (B).
        if hinted("legal_risk") {
            prop_assert_eq!(filed.class, Class::A);
        }
        if hinted("media_exposure") || hinted("online_exposure") {
            prop_assert!(filed.class <= Class::B);
        }
        // Five or more customers on the topic: a group class (or A, which stays).
        if context.group_customers >= rules.group.min_customers {
            prop_assert!(matches!(filed.class, Class::A | Class::B | Class::D), "{:?}", filed.class);
        }
        // Nothing is dropped: an unknown category goes to the default route, flagged.
        prop_assert!(rules.department(&filed.department).is_some());
        if filed.matched_by == "default" {
            prop_assert!(filed.flags.iter().any(|f| f == "unknown_category" || f == "uncategorised"));
        }
        // The handler and the clocks follow the final class and department.
        prop_assert_eq!(&filed.handler, &holder(Level::Handler, &rules, &filed.department));
        prop_assert_eq!(filed.targets, targets_for(&rules, filed.class));
        // A and B, and repeat complainants, go to the manager at once; nobody else does.
        let escalations = events[1..]
            .iter()
            .filter(|e| matches!(e, ComplaintEvent::ComplaintEscalated { level: Level::Manager, .. }))
            .count();
        let expected = usize::from(filed.class.is_major()) + usize::from(context.previous_complaint.is_some());
        prop_assert_eq!(escalations, expected);
        prop_assert_eq!(events.len(), 1 + expected);
    }
}
