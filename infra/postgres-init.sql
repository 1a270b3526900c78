-- MLflow's database is POSTGRES_DB; Prefect gets its own.
CREATE DATABASE prefect OWNER keel;
-- MLflow's basic-auth app keeps its users and permissions apart from the tracking data.
CREATE DATABASE mlflow_auth OWNER keel;
