"""The orders service: checkout, and the saga that reserves stock, charges and confirms (or compensates)."""
