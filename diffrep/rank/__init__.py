"""Caption ranking (paper 2): caption sets, DCS/ECS scoring, verbatim ground truth."""
