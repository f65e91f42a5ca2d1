"""Models, versions and deployments as data.

The SQL store holds the records; the content-addressed artifact store holds the files.
"""
