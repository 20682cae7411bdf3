//! An SLA clock counted in working time on a calendar: it runs, pauses keeping the time
//! already used, resumes, stops; its target may change (a change of class) without losing the
//! time used. Each whole target used up is one breach: the first at 1x the target, the
//! second at 2x, and so on, so an unhandled complaint keeps climbing the escalation chain.

use callback_calendar::Calendar;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClock {
    pub target_minutes: i64,
    /// Working time used before `running_since`, in seconds.
    pub used_seconds: i64,
    /// Running since then; `None` while paused or stopped.
    pub running_since: Option<DateTime<Utc>>,
    pub stopped: bool,
    /// Breaches fired so far (whole targets used up).
    pub breaches: u32,
}

impl SlaClock {
    /// A clock that has not started (e.g. the update clock before the first response).
    pub fn idle(target: Duration) -> SlaClock {
        SlaClock {
            target_minutes: target.num_minutes(),
            used_seconds: 0,
            running_since: None,
            stopped: false,
            breaches: 0,
        }
    }

    pub fn started(target: Duration, at: DateTime<Utc>) -> SlaClock {
        SlaClock {
            running_since: Some(at),
            ..SlaClock::idle(target)
        }
    }

    pub fn target(&self) -> Duration {
        Duration::minutes(self.target_minutes)
    }

    pub fn is_running(&self) -> bool {
        self.running_since.is_some()
    }

    /// Working time used until `now`.
    pub fn elapsed(&self, calendar: &Calendar, now: DateTime<Utc>) -> Duration {
        let running = self
            .running_since
            .map(|since| calendar.working_time_between(since, now))
            .unwrap_or_else(Duration::zero);
        Duration::seconds(self.used_seconds) + running
    }

    pub fn pause(&mut self, calendar: &Calendar, at: DateTime<Utc>) {
        if let Some(since) = self.running_since.take() {
            self.used_seconds += calendar.working_time_between(since, at).num_seconds();
        }
    }

    /// Resumes a paused clock; a stopped one stays stopped.
    pub fn resume(&mut self, at: DateTime<Utc>) {
        if !self.stopped && self.running_since.is_none() {
            self.running_since = Some(at);
        }
    }

    pub fn stop(&mut self, calendar: &Calendar, at: DateTime<Utc>) {
        self.pause(calendar, at);
        self.stopped = true;
    }

    /// A fresh clock from `at` with the same target (the next progress update is due a whole
    /// target after the last one).
    pub fn restart(&mut self, at: DateTime<Utc>) {
        *self = SlaClock::started(self.target(), at);
    }

    /// A new target (a change of class); the time used is kept. Breaches already fired stay
    /// fired; the next one falls at the next whole multiple of the new target.
    pub fn retarget(&mut self, target: Duration) {
        self.target_minutes = target.num_minutes();
    }

    /// When the next breach falls, while running: the instant the used working time reaches
    /// (breaches + 1) x target, or at once if it already has (after a retarget).
    pub fn next_breach_at(&self, calendar: &Calendar) -> Option<DateTime<Utc>> {
        let since = self.running_since?;
        let goal = self.target() * (self.breaches as i32 + 1);
        let remaining = goal - Duration::seconds(self.used_seconds);
        if remaining <= Duration::zero() {
            return Some(since);
        }
        calendar.add_working_time(since, remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callback_calendar::CalendarSpec;
    use chrono::TimeZone;

    /// Shanghai office hours 09:00-12:00 and 13:00-18:00 (8 working hours a day), Mon-Fri.
    fn calendar() -> Calendar {
        let spec: CalendarSpec = serde_json::from_value(serde_json::json!({
            "time_zone": "Asia/Shanghai",
            "windows": [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "18:00"}],
            "holidays": ["2026-10-01"]
        }))
        .unwrap();
        Calendar::new(&spec).unwrap()
    }

    fn local(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2026, 9, d, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn breach_falls_after_the_target_in_working_time() {
        let cal = calendar();
        // Filed Friday 2026-09-25 at 17:00: 1 hour left that day, the weekend does not count.
        let clock = SlaClock::started(Duration::hours(8), local(25, 17, 0));
        assert_eq!(clock.next_breach_at(&cal), Some(local(28, 17, 0)));
        assert_eq!(clock.elapsed(&cal, local(28, 9, 30)), Duration::minutes(90));
    }

    #[test]
    fn pause_keeps_the_time_used() {
        let cal = calendar();
        let mut clock = SlaClock::started(Duration::hours(8), local(28, 9, 0));
        clock.pause(&cal, local(28, 11, 0));
        assert_eq!(clock.used_seconds, 2 * 3600);
        assert_eq!(clock.next_breach_at(&cal), None);
        // Days paused cost nothing.
        clock.resume(local(30, 9, 0));
        assert_eq!(clock.next_breach_at(&cal), Some(local(30, 16, 0)));
    }

    #[test]
    fn retarget_keeps_elapsed_and_may_breach_at_once() {
        let cal = calendar();
        let mut clock = SlaClock::started(Duration::hours(8), local(28, 9, 0));
        clock.pause(&cal, local(28, 13, 0)); // 3 working hours used
        clock.resume(local(28, 13, 0));
        clock.retarget(Duration::hours(2));
        assert_eq!(clock.next_breach_at(&cal), Some(local(28, 13, 0)));
        clock.breaches = 1;
        // The second breach at 4 hours used: one more hour.
        assert_eq!(clock.next_breach_at(&cal), Some(local(28, 14, 0)));
    }

    #[test]
    fn stopped_clocks_neither_run_nor_resume() {
        let cal = calendar();
        let mut clock = SlaClock::started(Duration::hours(8), local(28, 9, 0));
        clock.stop(&cal, local(28, 10, 0));
        clock.resume(local(28, 11, 0));
        assert!(!clock.is_running());
        assert_eq!(clock.elapsed(&cal, local(29, 10, 0)), Duration::hours(1));
        assert_eq!(clock.next_breach_at(&cal), None);
    }

    #[test]
    fn repeated_breaches_fall_at_whole_multiples() {
        let cal = calendar();
        let mut clock = SlaClock::started(Duration::hours(4), local(28, 9, 0));
        assert_eq!(clock.next_breach_at(&cal), Some(local(28, 14, 0)));
        clock.breaches = 1;
        assert_eq!(clock.next_breach_at(&cal), Some(local(28, 18, 0)));
        clock.breaches = 2;
        assert_eq!(clock.next_breach_at(&cal), Some(local(29, 14, 0)));
    }

    #[test]
    fn holidays_do_not_count() {
        let cal = calendar();
        // Wednesday 2026-09-30 17:00, one hour left; Thursday 1 October is a holiday.
        let clock = SlaClock::started(Duration::hours(2), local(30, 17, 0));
        let due = clock.next_breach_at(&cal).unwrap();
        assert_eq!(
            due,
            chrono_tz::Asia::Shanghai
                .with_ymd_and_hms(2026, 10, 2, 10, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
    }
}
