-- What call-logging keeps of the scheduling service's facts, fed by its event feed.

-- Each tenant's calendar, for the calling-window honesty check.
CREATE TABLE cl_tenant_calendars (
    tenant_id text PRIMARY KEY,
    calendar jsonb NOT NULL
);

-- Phone numbers (digits only) of subjects, for the shared-contact check. Personal data.
CREATE TABLE cl_contacts (
    tenant_id text NOT NULL,
    phone_digits text NOT NULL,
    subject_id text NOT NULL,
    PRIMARY KEY (tenant_id, phone_digits, subject_id)
);

-- Pairs of subjects already flagged for sharing a number.
CREATE TABLE cl_shared_contacts (
    tenant_id text NOT NULL,
    phone_digits text NOT NULL,
    subject_id text NOT NULL,
    other_subject_id text NOT NULL,
    PRIMARY KEY (tenant_id, phone_digits, subject_id, other_subject_id)
);
