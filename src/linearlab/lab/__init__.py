"""Helpers the lab's recipes share, one home each: text tables (:mod:`.tables`), parallel jobs
(:mod:`.parallel`) and the mixer variants the sequence-model recipes compare (:mod:`.mixer_variants`)."""
