"""`access-eval run`: the transactional consume -> evaluate -> produce loop and its wiring."""
