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
# The s3 extra is small and lets an operator switch storage by environment alone.
RUN pip install '.[s3]' && useradd --create-home postroom \
    && mkdir -p /var/lib/postroom/media && chown -R postroom /var/lib/postroom
# Static files are collected into the image (hashed names, gzipped copies beside them) and
# served by whitenoise from gunicorn; the keys here exist only for this build step.
ENV STATIC_ROOT=/app/staticfiles POSTROOM_VAR_DIR=/var/lib/postroom
RUN DEBUG=false SECRET_KEY=collectstatic-only \
    POSTROOM_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    python manage.py collectstatic --noinput \
    && chown -R postroom /var/lib/postroom
USER postroom
EXPOSE 8000
CMD ["gunicorn", "channels_app.wsgi", "--config=python:channels_app.gunicorn_conf", "--bind=0.0.0.0:8000"]
