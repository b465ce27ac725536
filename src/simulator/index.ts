export { SIM_DEFAULT_CREDENTIALS, credentialsFromEnv, simulatorEnv, type SimCredentials, type SimCredentialsInput, type SimOAuthClient } from './credentials';
export { startSimulator, type RunningSimulator, type StartSimulatorOptions } from './simulator.server';
export { seedPublicKey, sshKeyFingerprint, type SimSshKeyInput } from './hetzner.ssh-keys';
export type {
  EnrollmentState,
  HetznerActionBody,
  HetznerServerBody,
  HetznerSshKeyBody,
  SimAuthKeyState,
  SimControl,
  SimDeviceInput,
  SimProjectInput,
  SimProjectView,
  SimDevicePatch,
  SimServerInput,
  SimServerPatch,
  SimServerState,
  SimState,
  TailscaleDeviceBody,
  TailscaleKeyBody,
} from './simulator';
export type { SimFaultRule, SimFaults } from './faults';
export type { ServerStatus } from './hetzner.model';
export { ACTION_COMMANDS, DEFAULT_TIMINGS, type ActionCommand, type SimRateLimit, type SimTimings, type SimTimingsInput } from './timings';
