"""
The sockplay bench.
"""
