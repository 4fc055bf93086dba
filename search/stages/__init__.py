"""A search end to end and the stages after it: the session (`session`: Ray, the set-up, a reward
kind's own stage, the search, the confirmation, the outputs), the confirmation of the best
policies on fresh replicates (`confirm`), what is written (`outputs`) and the validation-overfit
diagnostics (`diagnostics`)."""
