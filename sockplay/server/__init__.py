"""
The sockplay server.
"""
