//! A tenant's routing rules as data (published as JSON, versioned, stored as events): which
//! class, origin and department a complaint gets from its category or keywords, the group
//! rule, the SLA targets per class, the escalation chain per department, and the office
//! calendar the clocks count working time on.

use std::collections::BTreeMap;

use callback_calendar::{Calendar, CalendarSpec};
use serde::{Deserialize, Serialize};

pub use callback_contracts::complaint_routing::{Class, Origin};

/// The rules of complaint classes (the classes themselves are part of the contract).
pub trait ClassRules {
    /// Opinions and inquiries (D, E) group separately from complaints (A, B, C).
    fn is_opinion(&self) -> bool;
    /// The class a member of a group takes: a general complaint becomes a group complaint, a
    /// single opinion a group opinion; A and the group classes stay.
    fn as_group(&self) -> Class;
    /// A and B are reported to the manager at once and followed up daily.
    fn is_major(&self) -> bool;
}

impl ClassRules for Class {
    fn is_opinion(&self) -> bool {
        matches!(self, Class::D | Class::E)
    }

    fn as_group(&self) -> Class {
        match self {
            Class::C => Class::B,
            Class::E => Class::D,
            other => *other,
        }
    }

    fn is_major(&self) -> bool {
        matches!(self, Class::A | Class::B)
    }
}

/// Class, origin and responsible department.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub class: Class,
    pub origin: Origin,
    pub department: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryRule {
    pub category: String,
    pub class: Class,
    pub origin: Origin,
    pub department: String,
}

/// Applies when the category is unknown or absent and the text contains the keyword.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordRule {
    pub keyword: String,
    pub class: Class,
    pub origin: Origin,
    pub department: String,
}

/// The same topic from `min_customers` distinct customers within `window_hours` makes a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    #[serde(default = "default_group_size")]
    pub min_customers: u32,
    #[serde(default = "default_group_window_hours")]
    pub window_hours: u32,
    /// Where group complaints are routed (e.g. a customer-relations office); when absent they
    /// stay with their category's department.
    #[serde(default)]
    pub department: Option<String>,
}

impl Default for GroupRule {
    fn default() -> Self {
        GroupRule {
            min_customers: default_group_size(),
            window_hours: default_group_window_hours(),
            department: None,
        }
    }
}

fn default_group_size() -> u32 {
    5
}

fn default_group_window_hours() -> u32 {
    30 * 24
}

/// SLA targets of one class, in working hours on the rules' calendar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassTargets {
    pub first_response_hours: u32,
    pub update_hours: u32,
    pub resolution_hours: u32,
    /// Follow-up reminders until resolved, every so many (wall-clock) hours; A and B default
    /// to daily, the others to none.
    #[serde(default)]
    pub follow_up_every_hours: Option<u32>,
}

/// The escalation chain of one department: handler -> department head -> manager; the
/// general manager is the tenant's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    pub handler: String,
    pub head: String,
    pub manager: String,
}

/// How the verification callback's answer is read: the questionnaire item, and the lowest
/// rating that counts as satisfied (yes/no items: yes is satisfied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationRule {
    #[serde(default = "default_verification_event")]
    pub event_type: String,
    #[serde(default = "default_verification_item")]
    pub item_id: String,
    #[serde(default = "default_min_rating")]
    pub min_rating: u32,
    /// The business event type that asks scheduling for the explanation callback after a
    /// complaint is rejected as invalid.
    #[serde(default = "default_explanation_event")]
    pub explanation_event_type: String,
}

impl Default for VerificationRule {
    fn default() -> Self {
        VerificationRule {
            event_type: default_verification_event(),
            item_id: default_verification_item(),
            min_rating: default_min_rating(),
            explanation_event_type: default_explanation_event(),
        }
    }
}

fn default_verification_event() -> String {
    "complaint.resolved".into()
}

fn default_explanation_event() -> String {
    "complaint.rejected".into()
}

fn default_verification_item() -> String {
    "satisfied".into()
}

fn default_min_rating() -> u32 {
    4
}

fn default_repeat_window_days() -> u32 {
    30
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRules {
    /// Office hours the clocks count in (departments keep other hours than the call centre).
    pub calendar: CalendarSpec,
    /// Where a complaint goes when neither its category nor a keyword is known (flagged).
    pub default_route: Route,
    #[serde(default)]
    pub categories: Vec<CategoryRule>,
    #[serde(default)]
    pub keywords: Vec<KeywordRule>,
    #[serde(default)]
    pub group: GroupRule,
    pub targets: BTreeMap<Class, ClassTargets>,
    pub departments: BTreeMap<String, Department>,
    pub general_manager: String,
    /// A second complaint from one customer within this many days goes to the manager.
    #[serde(default = "default_repeat_window_days")]
    pub repeat_window_days: u32,
    #[serde(default)]
    pub verification: VerificationRule,
    /// The region (ISO 3166) complainants' numbers without a country code are read in when
    /// they are normalised to E.164; default `CN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_region: Option<String>,
}

/// A rules document that cannot be used, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RulesError {
    pub field: String,
    pub reason: String,
}

fn rules_error(field: impl Into<String>, reason: impl Into<String>) -> RulesError {
    RulesError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// How a complaint was placed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub route: Route,
    /// "category", "keyword:<keyword>" or "default".
    pub matched_by: String,
    pub flags: Vec<String>,
}

/// What classification looks at.
pub struct ComplaintFacts<'a> {
    pub category: &'a str,
    pub text: &'a str,
    pub severity_hints: &'a [String],
}

pub const SEVERITY_HINTS: [&str; 3] = ["legal_risk", "media_exposure", "online_exposure"];

impl RoutingRules {
    /// Parses and validates a published document.
    pub fn parse(json: &str) -> Result<(RoutingRules, Calendar), RulesError> {
        let rules: RoutingRules = callback_rules::input::parse_document("rules_json", json)
            .map_err(|(field, reason)| rules_error(field, reason))?;
        let calendar = rules.validate()?;
        Ok((rules, calendar))
    }

    /// Checks the document and returns its calendar.
    pub fn validate(&self) -> Result<Calendar, RulesError> {
        let calendar =
            Calendar::new(&self.calendar).map_err(|e| rules_error("calendar", e.to_string()))?;
        for class in Class::ALL {
            let targets = self
                .targets
                .get(&class)
                .ok_or_else(|| rules_error(format!("targets.{}", class.as_str()), "is required"))?;
            for (name, hours) in [
                ("first_response_hours", targets.first_response_hours),
                ("update_hours", targets.update_hours),
                ("resolution_hours", targets.resolution_hours),
            ] {
                if hours == 0 || hours > 24 * 366 {
                    return Err(rules_error(
                        format!("targets.{}.{name}", class.as_str()),
                        "must be 1-8784 working hours",
                    ));
                }
            }
            if targets
                .follow_up_every_hours
                .is_some_and(|h| h == 0 || h > 24 * 366)
            {
                return Err(rules_error(
                    format!("targets.{}.follow_up_every_hours", class.as_str()),
                    "must be 1-8784 hours",
                ));
            }
        }
        if self.departments.is_empty() {
            return Err(rules_error("departments", "at least one is required"));
        }
        for (name, department) in &self.departments {
            if name.trim().is_empty() {
                return Err(rules_error("departments", "a department name is empty"));
            }
            for (field, who) in [
                ("handler", &department.handler),
                ("head", &department.head),
                ("manager", &department.manager),
            ] {
                if who.trim().is_empty() {
                    return Err(rules_error(
                        format!("departments.{name}.{field}"),
                        "must not be empty",
                    ));
                }
            }
        }
        if self.general_manager.trim().is_empty() {
            return Err(rules_error("general_manager", "must not be empty"));
        }
        self.known_department("default_route.department", &self.default_route.department)?;
        for (i, rule) in self.categories.iter().enumerate() {
            if rule.category.trim().is_empty() {
                return Err(rules_error(
                    format!("categories[{i}].category"),
                    "must not be empty",
                ));
            }
            if self.categories[..i]
                .iter()
                .any(|r| r.category == rule.category)
            {
                return Err(rules_error(
                    format!("categories[{i}].category"),
                    format!("`{}` is listed twice", rule.category),
                ));
            }
            self.known_department(&format!("categories[{i}].department"), &rule.department)?;
        }
        for (i, rule) in self.keywords.iter().enumerate() {
            if rule.keyword.trim().is_empty() {
                return Err(rules_error(
                    format!("keywords[{i}].keyword"),
                    "must not be empty",
                ));
            }
            self.known_department(&format!("keywords[{i}].department"), &rule.department)?;
        }
        if !(2..=100_000).contains(&self.group.min_customers) {
            return Err(rules_error("group.min_customers", "must be 2-100000"));
        }
        if !(1..=24 * 366).contains(&self.group.window_hours) {
            return Err(rules_error("group.window_hours", "must be 1-8784 hours"));
        }
        if let Some(department) = &self.group.department {
            self.known_department("group.department", department)?;
        }
        if !(1..=3660).contains(&self.repeat_window_days) {
            return Err(rules_error("repeat_window_days", "must be 1-3660 days"));
        }
        if self.verification.item_id.trim().is_empty() {
            return Err(rules_error("verification.item_id", "must not be empty"));
        }
        if let Some(problem) = self
            .phone_region
            .as_deref()
            .and_then(callback_rules::phone::region_problem)
        {
            return Err(rules_error("phone_region", problem));
        }
        Ok(calendar)
    }

    fn known_department(&self, field: &str, department: &str) -> Result<(), RulesError> {
        if self.departments.contains_key(department) {
            Ok(())
        } else {
            Err(rules_error(
                field,
                format!("unknown department `{department}`"),
            ))
        }
    }

    /// The region complainants' numbers are read in (default `CN`).
    pub fn phone_region(&self) -> &str {
        self.phone_region
            .as_deref()
            .unwrap_or(callback_rules::phone::DEFAULT_REGION)
    }

    pub fn department(&self, name: &str) -> Option<&Department> {
        self.departments.get(name)
    }

    pub fn targets(&self, class: Class) -> &ClassTargets {
        // Validation guarantees every class has targets.
        &self.targets[&class]
    }

    /// Class, origin and department from the category (else a keyword in the text, else the
    /// default route, flagged), then raised by severity hints: legal risk makes it major (A),
    /// media or online exposure a group complaint (B).
    pub fn place(&self, facts: &ComplaintFacts<'_>) -> Placement {
        let mut flags = Vec::new();
        let by_category = self
            .categories
            .iter()
            .find(|rule| rule.category == facts.category);
        let (mut route, matched_by) = if let Some(rule) = by_category {
            (
                Route {
                    class: rule.class,
                    origin: rule.origin,
                    department: rule.department.clone(),
                },
                "category".to_owned(),
            )
        } else if let Some(rule) = self
            .keywords
            .iter()
            .find(|rule| facts.text.contains(rule.keyword.as_str()))
        {
            if !facts.category.is_empty() {
                flags.push("unknown_category".to_owned());
            }
            (
                Route {
                    class: rule.class,
                    origin: rule.origin,
                    department: rule.department.clone(),
                },
                format!("keyword:{}", rule.keyword),
            )
        } else {
            flags.push(if facts.category.is_empty() {
                "uncategorised".to_owned()
            } else {
                "unknown_category".to_owned()
            });
            (self.default_route.clone(), "default".to_owned())
        };
        let hinted = |hint: &str| facts.severity_hints.iter().any(|h| h == hint);
        if hinted("legal_risk") && route.class != Class::A {
            route.class = Class::A;
            flags.push("legal_risk".to_owned());
        }
        if (hinted("media_exposure") || hinted("online_exposure")) && route.class > Class::B {
            route.class = Class::B;
            flags.push("public_exposure".to_owned());
        }
        Placement {
            route,
            matched_by,
            flags,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A property manager's rules: office hours 08:30-12:00 and 13:00-17:30, Monday-Friday.
    pub fn property_rules() -> RoutingRules {
        serde_json::from_value(serde_json::json!({
            "calendar": {
                "time_zone": "Asia/Shanghai",
                "windows": [{"start": "08:30", "end": "12:00"}, {"start": "13:00", "end": "17:30"}],
                "holidays": ["2026-10-01", "2026-10-02", "2026-10-05"],
                "extra_working_days": ["2026-10-10"]
            },
            "default_route": {"class": "C", "origin": "our_service", "department": "service_desk"},
            "categories": [
                {"category": "leak", "class": "A", "origin": "our_service", "department": "engineering"},
                {"category": "noise", "class": "C", "origin": "environment", "department": "service_desk"},
                {"category": "appliance_fault", "class": "C", "origin": "product", "department": "rnd"},
                {"category": "suggestion", "class": "E", "origin": "our_service", "department": "service_desk"}
            ],
            "keywords": [{"keyword": "裂缝", "class": "A", "origin": "our_service", "department": "engineering"}],
            "group": {"min_customers": 5, "window_hours": 720, "department": "customer_relations"},
            "targets": {
                "A": {"first_response_hours": 1, "update_hours": 8, "resolution_hours": 40},
                "B": {"first_response_hours": 2, "update_hours": 8, "resolution_hours": 40},
                "C": {"first_response_hours": 8, "update_hours": 16, "resolution_hours": 40},
                "D": {"first_response_hours": 8, "update_hours": 24, "resolution_hours": 80},
                "E": {"first_response_hours": 16, "update_hours": 40, "resolution_hours": 80}
            },
            "departments": {
                "service_desk": {"handler": "desk-pool", "head": "desk-head", "manager": "ops-manager"},
                "engineering": {"handler": "eng-pool", "head": "eng-head", "manager": "ops-manager"},
                "rnd": {"handler": "rnd-pool", "head": "rnd-head", "manager": "product-manager"},
                "customer_relations": {"handler": "cr-pool", "head": "cr-head", "manager": "ops-manager"}
            },
            "general_manager": "gm"
        }))
        .expect("valid rules")
    }

    fn facts<'a>(category: &'a str, text: &'a str, hints: &'a [String]) -> ComplaintFacts<'a> {
        ComplaintFacts {
            category,
            text,
            severity_hints: hints,
        }
    }

    #[test]
    fn the_example_rules_validate() {
        property_rules().validate().unwrap();
    }

    #[test]
    fn category_then_keyword_then_flagged_default() {
        let rules = property_rules();
        let placed = rules.place(&facts("appliance_fault", "the fridge hums", &[]));
        assert_eq!(placed.route.department, "rnd");
        assert_eq!(placed.route.origin, Origin::Product);
        assert!(placed.flags.is_empty());

        let placed = rules.place(&facts("walls", "客厅墙面有裂缝", &[]));
        assert_eq!(placed.route.class, Class::A);
        assert_eq!(placed.matched_by, "keyword:裂缝");
        assert_eq!(placed.flags, ["unknown_category"]);

        let placed = rules.place(&facts("parking", "no space", &[]));
        assert_eq!(placed.route, rules.default_route);
        assert_eq!(placed.flags, ["unknown_category"]);
        assert_eq!(
            rules.place(&facts("", "no space", &[])).flags,
            ["uncategorised"]
        );
    }

    #[test]
    fn severity_hints_raise_the_class() {
        let rules = property_rules();
        let legal = ["legal_risk".to_owned()];
        assert_eq!(
            rules.place(&facts("noise", "t", &legal)).route.class,
            Class::A
        );
        let media = ["media_exposure".to_owned()];
        assert_eq!(
            rules.place(&facts("noise", "t", &media)).route.class,
            Class::B
        );
        // Exposure never lowers a major complaint.
        assert_eq!(
            rules.place(&facts("leak", "t", &media)).route.class,
            Class::A
        );
    }

    #[test]
    fn group_classes() {
        assert_eq!(Class::C.as_group(), Class::B);
        assert_eq!(Class::E.as_group(), Class::D);
        assert_eq!(Class::A.as_group(), Class::A);
        assert!(Class::D.is_opinion() && !Class::B.is_opinion());
    }

    #[test]
    fn invalid_documents_name_the_field() {
        let mut rules = property_rules();
        rules.targets.remove(&Class::D);
        assert_eq!(rules.validate().unwrap_err().field, "targets.D");

        let mut rules = property_rules();
        rules.categories[1].department = "nowhere".into();
        assert_eq!(
            rules.validate().unwrap_err().field,
            "categories[1].department"
        );

        let mut rules = property_rules();
        rules.targets.get_mut(&Class::A).unwrap().resolution_hours = 0;
        assert_eq!(
            rules.validate().unwrap_err().field,
            "targets.A.resolution_hours"
        );

        // A type error names its JSON path.
        let err = RoutingRules::parse("{\"calendar\": 3}").unwrap_err();
        assert_eq!(err.field, "rules_json.calendar");
    }
}
