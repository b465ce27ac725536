// Loaded by mocha before every test file (see .mocharc.json).
import 'reflect-metadata';

process.env.LOG_LEVEL ??= 'silent';
