"""Local stand-ins for OpenText Exstream, Firebase Cloud Messaging (with Google OAuth2) and a Web Push service.
Development tools, not product code."""
