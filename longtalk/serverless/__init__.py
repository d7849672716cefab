"""RunPod Serverless: the handler that renders one window per job on RunPod (handler.py),
the job's shape (protocol.py) and the presigned-URL store it reads and writes (presigned.py).
The dispatcher that submits the jobs from here is activities/runpod.py."""
