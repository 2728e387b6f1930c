"""
Helpers shared by the tests: fakes, real-reactor driving and real server processes.
"""
