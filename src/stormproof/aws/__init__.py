"""AWS: what the Batch executor, the EC2 fleet, the interruption queue, prices and
``stormproof aws`` share — clients, resource names, the run's AWS settings, errors.

boto3 is an extra (``pip install 'stormproof[aws]'``): nothing here imports it at module
level, and ``clients.boto3_module`` names the extra when it is missing.
"""
