"""The capacity seam: where instances come from and what takes them away (DESIGN §3, §7)."""
