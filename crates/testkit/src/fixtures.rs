//! Documents tests publish again and again.

/// Complaint routing rules for a hospital: one department `nursing` (handler `ward-5`, head
/// `head-nurse`, manager `nursing-director`), class C by default, a category `safety` of class
/// A (escalated to the manager at once), the usual targets per class, a day calendar.
pub fn nursing_routing_rules() -> String {
    r#"{
        "calendar": {"time_zone": "Asia/Shanghai", "windows": [{"start": "08:00", "end": "17:30"}]},
        "default_route": {"class": "C", "origin": "our_service", "department": "nursing"},
        "categories": [{"category": "safety", "class": "A", "origin": "our_service", "department": "nursing"}],
        "targets": {
            "A": {"first_response_hours": 1, "update_hours": 8, "resolution_hours": 16},
            "B": {"first_response_hours": 2, "update_hours": 8, "resolution_hours": 24},
            "C": {"first_response_hours": 8, "update_hours": 16, "resolution_hours": 40},
            "D": {"first_response_hours": 8, "update_hours": 24, "resolution_hours": 40},
            "E": {"first_response_hours": 16, "update_hours": 40, "resolution_hours": 80}
        },
        "departments": {"nursing": {"handler": "ward-5", "head": "head-nurse", "manager": "nursing-director"}},
        "general_manager": "president"
    }"#
    .to_owned()
}
