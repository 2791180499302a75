"""Shipped agents: SB3 zips with their model cards (data; read by agents.zoo)."""
