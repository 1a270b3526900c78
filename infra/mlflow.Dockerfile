# The MLflow server keel's compose runs: MLflow's pins plus the Postgres and S3 drivers.
FROM python:3.11-slim
# Flask-WTF: MLflow's basic-auth app (mlflow[auth]), which the compose file runs
RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.43.117 Flask-WTF==1.3.0
EXPOSE 5000
