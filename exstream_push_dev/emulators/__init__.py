"""Local stand-ins for OpenText Exstream and Firebase Cloud Messaging. Development tools, not product code."""
