"""
The sockplay client.
"""
