"""One trial, without Ray: its typed config (`config`), how a config becomes a policy
(`compile`, `references`), its seeds (`seeds`), the training and its reports (`trial`), replayable
schedules (`schedule`), PBA's explore (`pbt`), cohorts of trials trained together (`cohorts`) and
the test hooks (`hooks`)."""
