"""Jobs: submit, run state, recovery, artifacts, billing, and the filters every job list takes."""
