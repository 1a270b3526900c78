# The MLflow server keel's compose runs: MLflow's pins plus the Postgres and S3 drivers.
FROM python:3.11-slim
RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.43.117
EXPOSE 5000
