"""Audit: projections of the log that account for every contribution, epoch and payout."""
