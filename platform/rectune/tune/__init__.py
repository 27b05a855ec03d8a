"""Tuning campaigns: search spaces (``space``) and Ray Tune + Optuna campaigns (``campaign``)."""
