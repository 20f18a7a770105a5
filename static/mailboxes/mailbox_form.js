// Show only the channel fields that apply to the chosen protocol, server type and auth type,
// and fill server names from a provider preset. Without JavaScript every field shows and the
// server-side validation still holds.
"use strict";
(function () {
  const PRESETS = {
    gmail: {imap: ["imap.gmail.com", 993, "ssl"], pop3: ["pop.gmail.com", 995, "ssl"],
            smtp: ["smtp.gmail.com", 587, "starttls"], copy: false, sent: "[Gmail]/Sent Mail",
            oauth: "google"},
    microsoft: {imap: ["outlook.office365.com", 993, "ssl"], pop3: ["outlook.office365.com", 995, "ssl"],
                smtp: ["smtp.office365.com", 587, "starttls"], copy: false, sent: "Sent Items",
                oauth: "microsoft"},
    yahoo: {imap: ["imap.mail.yahoo.com", 993, "ssl"], pop3: ["pop.mail.yahoo.com", 995, "ssl"],
            smtp: ["smtp.mail.yahoo.com", 465, "ssl"], copy: true, sent: "Sent"},
    icloud: {imap: ["imap.mail.me.com", 993, "ssl"], smtp: ["smtp.mail.me.com", 587, "starttls"],
             copy: true, sent: "Sent Messages"},
  };
  const OAUTH_FIELDS = ["oauth_provider", "oauth_client_id", "oauth_client_secret",
    "clear_oauth_client_secret", "oauth_scope", "oauth_grant_type", "oauth_auth_url",
    "oauth_token_url", "oauth_redirect_uri", "oauth_discovery_url", "oauth_login", "oauth_tenant"];
  const CUSTOM_OAUTH_ONLY = ["oauth_auth_url", "oauth_token_url", "oauth_discovery_url"];
  const INCOMING_FIELDS = ["protocol", "incoming_host", "incoming_port", "incoming_security",
    "username", "password", "clear_password", "folder", "refresh_interval", "trust_self_signed"];
  const SMTP_FIELDS = ["smtp_host", "smtp_port", "smtp_security", "smtp_username", "smtp_password",
    "clear_smtp_password"];
  const SENDGRID_FIELDS = ["sendgrid_api_token", "clear_sendgrid_api_token"];
  const IMAP_ONLY = ["sent_folder", "copy_to_sent"];

  const field = (name) => document.getElementById("id_" + name);
  const value = (name) => { const el = field(name); return el ? (el.type === "checkbox" ? el.checked : el.value) : null; };
  const row = (name) => document.querySelector(".form-row.field-" + name) ||
    (field(name) && field(name).closest(".form-row"));
  const show = (names, visible) => names.forEach((n) => { const r = row(n); if (r) r.classList.toggle("postroom-hidden", !visible); });

  function refresh() {
    const listen = value("listen"), imap = value("protocol") === "imap";
    const oauth = value("auth_type") === "oauth2", smtp = value("server_type") === "smtp";
    show(INCOMING_FIELDS, listen);
    show(["password", "clear_password"], listen && !oauth);
    show(OAUTH_FIELDS, oauth);
    show(CUSTOM_OAUTH_ONLY, oauth && value("oauth_provider") === "custom");
    show(["oauth_tenant"], oauth && value("oauth_provider") === "microsoft");
    show(SMTP_FIELDS, smtp);
    show(["smtp_password", "clear_smtp_password"], smtp && !oauth);
    show(SENDGRID_FIELDS, !smtp);
    show(IMAP_ONLY, listen && imap);
  }

  function setIfEmpty(name, v) { const el = field(name); if (el && !el.value) el.value = v; }

  function applyPreset() {
    const preset = PRESETS[value("preset")];
    if (!preset) return;
    const incoming = preset[value("protocol")];
    if (incoming) { setIfEmpty("incoming_host", incoming[0]); setIfEmpty("incoming_port", incoming[1]);
      if (field("incoming_host").value === incoming[0]) field("incoming_security").value = incoming[2]; }
    if (preset.smtp) { setIfEmpty("smtp_host", preset.smtp[0]); setIfEmpty("smtp_port", preset.smtp[1]);
      if (field("smtp_host").value === preset.smtp[0]) field("smtp_security").value = preset.smtp[2]; }
    if (field("copy_to_sent")) field("copy_to_sent").checked = preset.copy;
    if (field("sent_folder")) field("sent_folder").value = preset.sent;
    if (preset.oauth && field("oauth_provider") && !field("oauth_provider").value) field("oauth_provider").value = preset.oauth;
    refresh();
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!field("protocol")) return;
    ["listen", "protocol", "auth_type", "server_type", "oauth_provider"].forEach((n) => {
      const el = field(n); if (el) el.addEventListener("change", refresh);
    });
    const preset = field("preset"); if (preset) preset.addEventListener("change", applyPreset);
    refresh();
  });
})();
