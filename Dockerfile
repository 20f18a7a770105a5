# One image for every Postroom role; docker-compose.yml picks the role with the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY channels_app ./channels_app
COPY mailboxes ./mailboxes
COPY providers ./providers
COPY pollers ./pollers
COPY cases ./cases
COPY templates ./templates
COPY static ./static
COPY manage.py ./
RUN pip install . && useradd --create-home postroom && mkdir -p /var/lib/postroom \
    && chown postroom /var/lib/postroom
USER postroom
ENV POSTROOM_VAR_DIR=/var/lib/postroom
EXPOSE 8000
CMD ["python", "-m", "channels_app.launcher", "web"]
