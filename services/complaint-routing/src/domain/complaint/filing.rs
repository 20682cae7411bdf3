//! Filing: classification and routing by the rules in force, with what the log says about
//! the customer and the topic; the chain that holds each level; the clocks' targets.

use super::*;

/// Who holds `level` of `department`'s chain under `rules` (the general manager when the
/// department has no chain).
pub fn holder(level: Level, rules: &RoutingRules, department: &str) -> String {
    let chain = rules.department(department);
    match (level, chain) {
        (Level::GeneralManager, _) | (_, None) => rules.general_manager.clone(),
        (Level::Handler, Some(d)) => d.handler.clone(),
        (Level::DepartmentHead, Some(d)) => d.head.clone(),
        (Level::Manager, Some(d)) => d.manager.clone(),
    }
}

/// The SLA targets of `class` under `rules`, in working minutes.
pub fn targets_for(rules: &RoutingRules, class: Class) -> Targets {
    let t = rules.targets(class);
    let follow_up = t
        .follow_up_every_hours
        .or(class.is_major().then_some(24))
        .map(|h| i64::from(h) * 60);
    Targets {
        first_response_minutes: i64::from(t.first_response_hours) * 60,
        update_minutes: i64::from(t.update_hours) * 60,
        resolution_minutes: i64::from(t.resolution_hours) * 60,
        follow_up_every_minutes: follow_up,
    }
}

/// The group key of a complaint: its topic, else its category (trimmed, case-folded).
pub fn group_topic(intake: &Intake) -> String {
    let topic = if intake.topic.trim().is_empty() {
        &intake.category
    } else {
        &intake.topic
    };
    topic.trim().to_lowercase()
}

/// What the log already says about the customer and the topic when a complaint is filed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Context {
    /// The customer's latest earlier complaint within the repeat window.
    pub previous_complaint: Option<Uuid>,
    /// Distinct customers, this one included, on the topic within the group window (of the
    /// same kind: complaints or opinions).
    pub group_customers: u32,
}

/// Classifies, routes and files a complaint: the filing event, then the escalations it needs
/// at once (A/B are reported to the manager; a repeat complainant goes to the manager).
pub fn file(
    complaint_id: Uuid,
    intake: &Intake,
    rules: &RoutingRules,
    rules_version: u64,
    context: &Context,
    now: DateTime<Utc>,
) -> Vec<ComplaintEvent> {
    let placement = rules.place(&crate::domain::rules::ComplaintFacts {
        category: &intake.category,
        text: &intake.text,
        severity_hints: &intake.severity_hints,
    });
    let mut route = placement.route;
    let mut flags = placement.flags;
    if context.group_customers >= rules.group.min_customers && route.class.as_group() != route.class
    {
        route.class = route.class.as_group();
        if let Some(department) = &rules.group.department {
            route.department = department.clone();
        }
        flags.push("group".into());
    }
    let filed = Filed {
        complaint_id,
        tenant_id: intake.tenant_id.clone(),
        source: intake.source.clone(),
        source_id: intake.source_id.clone(),
        channel: intake.channel.clone(),
        customer: intake.customer.clone(),
        text: intake.text.clone(),
        category: intake.category.clone(),
        topic: group_topic(intake),
        severity_hints: intake.severity_hints.clone(),
        reply_by: intake.reply_by,
        callback_id: intake.callback_id,
        rules_version,
        class: route.class,
        origin: route.origin,
        handler: holder(Level::Handler, rules, &route.department),
        department: route.department.clone(),
        matched_by: placement.matched_by,
        flags,
        targets: targets_for(rules, route.class),
        at: now,
    };
    let mut events = vec![ComplaintEvent::ComplaintFiled(Box::new(filed))];
    let to_manager = |reason: String| ComplaintEvent::ComplaintEscalated {
        level: Level::Manager,
        to: holder(Level::Manager, rules, &route.department),
        reason,
        at: now,
    };
    if route.class.is_major() {
        events.push(to_manager(format!(
            "class {} reported at once",
            route.class.as_str()
        )));
    }
    if let Some(previous) = context.previous_complaint {
        events.push(to_manager(format!(
            "repeat complainant: complaint {previous} within {} days",
            rules.repeat_window_days
        )));
    }
    events
}
